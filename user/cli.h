/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Subcommands of `sluice`; each returns the process exit status. */
#ifndef SLUICE_CLI_H
#define SLUICE_CLI_H

#include <stdbool.h>

int run__main(int argc, char **argv);
int status__main(int argc, char **argv);
int explain__main(int argc, char **argv);
int detach__main(int argc, char **argv);
int identities__main(int argc, char **argv);
int policies__main(int argc, char **argv);
int flows__main(int argc, char **argv);

#endif

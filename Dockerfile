# syntax=docker/dockerfile:1
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#
# sluice image: build/sluice and build/sluiced on Debian bookworm.
#
#   docker build -t sluice:dev .
#
# The build stage runs the project's own `make deps` (so it installs exactly
# the Debian packages the Makefile lists) and `make`. The runtime stage has
# only the shared libraries the two binaries link against. The BPF object is
# embedded in the binaries (skeleton), so it is not copied.
#
# Architectures: the build uses vmlinux/<arch>/vmlinux.h for `uname -m` of
# the build stage; only vmlinux/x86 is in the tree today, so build for
# linux/amd64 (add vmlinux/arm64 for arm64 images).

FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The package list first, so that the dependency layer is rebuilt only when
# the Makefile changes.
COPY Makefile ./
RUN make deps && rm -rf /var/lib/apt/lists/*
# Only the sources `make` needs: never a host build/ directory (objects
# built against another libc or libbpf) nor .git.
COPY include ./include
COPY bpf ./bpf
COPY user ./user
COPY vmlinux ./vmlinux
RUN make all && ./build/sluice version

FROM debian:bookworm-slim
# The runtime libraries of build/sluice and build/sluiced (ldd), the CA
# bundle for the Kubernetes API and fqdn look-ups over TLS, and mount/grep
# for the bpffs init container (both are in the base image; listed so that
# a slimmer base cannot drop them unnoticed).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libbpf1 libelf1 zlib1g libyaml-0-2 libcjson1 libmicrohttpd12 libcurl4 \
      ca-certificates mount grep \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/sluice /src/build/sluiced /usr/local/bin/
# sluiced needs uid 0 (it checks) plus the capabilities the DaemonSet
# grants; see manifests/README.md. The image itself grants nothing.
USER 0:0
ENTRYPOINT ["/usr/local/bin/sluiced"]
CMD ["--help"]
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="Node-level eBPF egress policy for AI agents: sluiced and the sluice CLI" \
      org.opencontainers.image.licenses="GPL-2.0-only OR BSD-2-Clause"

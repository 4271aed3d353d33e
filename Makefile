# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
# sluice: one Makefile. `make V=1` shows the commands.

OUTPUT   ?= build
CLANG    ?= clang
CC       ?= cc
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
VMLINUX  := vmlinux/$(ARCH)/vmlinux.h

# Debian packages the build, the tests and the demo need.
DEB_PKGS := clang llvm make gcc pkg-config libbpf-dev bpftool libelf-dev zlib1g-dev \
	    libyaml-dev libcjson-dev libcmocka-dev liburing-dev libcurl4-openssl-dev libmicrohttpd-dev \
	    libgnutls28-dev \
	    iproute2 dnsmasq-base nftables python3 python3-yaml curl openssl util-linux shellcheck

ifeq ($(V),1)
Q =
msg =
else
Q = @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

PKGS     := libbpf yaml-0.1 libcjson libmicrohttpd libcurl gnutls
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS   ?= -O2 -g
WARN     := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wformat=2 -Wno-format-truncation
CPPFLAGS := -D_GNU_SOURCE -Iinclude -Iuser -I$(OUTPUT) $(PKG_CFLAGS)
LDLIBS   := $(PKG_LIBS) -lelf -lz -lresolv
SAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_HDRS := $(wildcard bpf/lib/*.h) include/sluice/sluice.h
BPF_OBJ  := $(OUTPUT)/sluice.bpf.o
SKEL     := $(OUTPUT)/sluice.skel.h

MAINS    := user/main_sluice.c user/main_sluiced.c
LIB_SRCS := $(filter-out $(MAINS),$(wildcard user/*.c))
LIB_HDRS := $(wildcard user/*.h) include/sluice/sluice.h
LIB_OBJS := $(patsubst user/%.c,$(OUTPUT)/obj/%.o,$(LIB_SRCS))
SAN_OBJS := $(patsubst user/%.c,$(OUTPUT)/san/%.o,$(LIB_SRCS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(OUTPUT)/unit/%,$(UNIT_SRCS))
PROG_SRCS := $(wildcard tests/progs/*.c)
PROG_BINS := $(patsubst tests/progs/%.c,$(OUTPUT)/progs/%,$(PROG_SRCS))

.DELETE_ON_ERROR:
.PHONY: all deps test unit integration demo bench clean vmlinux progs

all: $(OUTPUT)/sluice $(OUTPUT)/sluiced $(BPF_OBJ)

deps:
	$(Q)missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(OUTPUT) $(OUTPUT)/obj $(OUTPUT)/san $(OUTPUT)/unit $(OUTPUT)/progs:
	$(Q)mkdir -p $@

$(OUTPUT)/%.tmp.bpf.o: bpf/%.bpf.c $(BPF_HDRS) $(VMLINUX) | $(OUTPUT)
	$(call msg,BPF,$@)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -D__bpf__ \
		-Wall -Werror -Iinclude -Ibpf -I$(dir $(VMLINUX)) -c $< -o $@

$(BPF_OBJ): $(patsubst bpf/%.bpf.c,$(OUTPUT)/%.tmp.bpf.o,$(BPF_SRCS))
	$(call msg,LINK,$@)
	$(Q)$(BPFTOOL) gen object $@ $^

$(SKEL): $(BPF_OBJ)
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name sluice_bpf > $@

$(OUTPUT)/obj/%.o: user/%.c $(LIB_HDRS) | $(OUTPUT)/obj
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) -c $< -o $@

$(OUTPUT)/san/%.o: user/%.c $(LIB_HDRS) | $(OUTPUT)/san
	$(call msg,CC-SAN,$@)
	$(Q)$(CC) -O1 -g $(SAN) $(WARN) $(CPPFLAGS) -c $< -o $@

$(OUTPUT)/libsluice.a: $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUTPUT)/libsluice-san.a: $(SAN_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(OUTPUT)/sluice: user/main_sluice.c $(OUTPUT)/libsluice.a $(LIB_HDRS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(OUTPUT)/libsluice.a $(LDLIBS) -o $@

$(OUTPUT)/sluiced: user/main_sluiced.c $(OUTPUT)/libsluice.a $(LIB_HDRS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< $(OUTPUT)/libsluice.a $(LDLIBS) -o $@

$(OUTPUT)/unit/%: tests/unit/%.c $(OUTPUT)/libsluice-san.a $(LIB_HDRS) | $(OUTPUT)/unit
	$(call msg,LD-SAN,$@)
	$(Q)$(CC) -O1 -g $(SAN) $(WARN) $(CPPFLAGS) $< $(OUTPUT)/libsluice-san.a $(LDLIBS) -lcmocka -o $@

$(OUTPUT)/progs/%: tests/progs/%.c | $(OUTPUT)/progs
	$(call msg,CC,$@)
	$(Q)$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) $< -luring -o $@

# Only the loader includes the skeleton.
$(OUTPUT)/obj/datapath.o $(OUTPUT)/san/datapath.o: $(SKEL)

progs: $(PROG_BINS)

unit: $(UNIT_BINS)
	$(Q)fail=0; for t in $(UNIT_BINS); do \
		echo "== $$t"; ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $$t || fail=1; \
	done; exit $$fail

integration: all progs
	$(Q)tests/integration/run.sh

test: deps
	$(Q)$(MAKE) --no-print-directory all progs $(UNIT_BINS)
	$(Q)tests/run-all.sh

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)examples/demo.sh

# Benchmarks (tests/bench, docs/benchmarks.md); root, about 5 minutes.
# `make bench BENCH_ARGS=--smoke`: every part once at tiny sizes, seconds.
bench: all
	$(Q)mkdir -p $(OUTPUT)/bench
	$(call msg,CC,$(OUTPUT)/bench/connbench)
	$(Q)$(CC) $(CFLAGS) $(WARN) -pthread tests/bench/connbench.c -o $(OUTPUT)/bench/connbench
	$(call msg,BPF,$(OUTPUT)/bench/floor.bpf.o)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -D__bpf__ -Wall -Werror -Iinclude \
		-Ibpf -I$(dir $(VMLINUX)) -c tests/bench/floor.bpf.c -o $(OUTPUT)/bench/floor.bpf.o
	$(call msg,LD,$(OUTPUT)/bench/pipebench)
	$(Q)$(CC) $(CFLAGS) $(WARN) $(CPPFLAGS) tests/bench/pipebench.c $(OUTPUT)/libsluice.a \
		$(LDLIBS) -o $(OUTPUT)/bench/pipebench
	$(Q)SLUICE_BENCH_BUILT=1 python3 tests/bench/run.py $(BENCH_ARGS)

# kind (needs docker, kind and kubectl; none of them run on the CI machine):
# create a cluster, build and load the image, deploy, run the e2e agent.
.PHONY: kind-up kind-deploy kind-e2e kind-down
kind-up:
	$(Q)scripts/kind.sh up
kind-deploy: kind-up
	$(Q)scripts/kind.sh deploy
kind-e2e: kind-deploy
	$(Q)scripts/kind.sh e2e
kind-down:
	$(Q)scripts/kind.sh down

vmlinux:
	$(call msg,GEN,$(VMLINUX))
	$(Q)mkdir -p $(dir $(VMLINUX)) && $(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $(VMLINUX)

clean:
	$(Q)rm -rf $(OUTPUT)

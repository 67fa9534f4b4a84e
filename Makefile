# stepsync — one non-recursive GNU Makefile. Out-of-tree builds: B=build (default),
# B=build-san (sanitizers), B=build-fuzz (clang + libFuzzer).
# Sources are found by wildcard: adding a file to a module needs no edit here.

B        ?= build
MAKEFLAGS += --no-print-directory
PREFIX   ?= /usr/local
DESTDIR  ?=
PKGS      = jansson sqlite3 libssl libcrypto inih libpq
TEST_PKGS = cmocka

WARN     = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wformat=2 -Wvla -Wno-unused-parameter
CPPFLAGS_ALL = -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -D_GNU_SOURCE \
               -Icommon -Idb -Iconfig -Iserver -Iagent \
               $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CPPFLAGS)
CFLAGS   ?= -O2 -g
CFLAGS_ALL = -std=c11 -pthread $(WARN) $(CFLAGS) $(SAN)
LDFLAGS_ALL = -pthread $(SAN) $(LDFLAGS)
LDLIBS_ALL = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(LDLIBS)

COMMON_SRC = $(wildcard common/*.c) $(wildcard db/*.c) $(wildcard config/*.c)
SERVER_SRC = $(filter-out server/main.c,$(wildcard server/*.c))
AGENT_SRC  = $(filter-out agent/main.c,$(wildcard agent/*.c))
UNIT_SRC   = $(wildcard tests/unit/test_*.c)
FUZZ_SRC   = $(wildcard tests/fuzz/fuzz_*.c)

COMMON_OBJ = $(COMMON_SRC:%.c=$(B)/%.o)
SERVER_OBJ = $(SERVER_SRC:%.c=$(B)/%.o)
AGENT_OBJ  = $(AGENT_SRC:%.c=$(B)/%.o)
LIBSTEP    = $(B)/libstep.a
LIBSTEPD   = $(B)/libstepd.a
LIBAGENT   = $(B)/libagent.a
UNIT_BIN   = $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
FUZZ_BIN   = $(FUZZ_SRC:tests/fuzz/%.c=$(B)/fuzz/%)
SHELL_T    = $(sort $(wildcard tests/t[0-9]*.sh))

PROVE_FLAGS ?= -j2

.PHONY: all stepd stepsync unit test check check-pg check-san deps fuzz fuzz-smoke bench \
        format format-check lint install clean demo cluster-demo

all: $(B)/stepd $(B)/stepsync

stepd: $(B)/stepd
stepsync: $(B)/stepsync

$(B)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

$(LIBSTEP): $(COMMON_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(LIBSTEPD): $(SERVER_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(LIBAGENT): $(AGENT_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) rcs $@ $^

$(B)/stepd: $(B)/server/main.o $(LIBSTEPD) $(LIBSTEP)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(B)/stepsync: $(B)/agent/main.o $(LIBAGENT) $(LIBSTEP)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

# Unit tests link against every library so module internals can be tested.
$(B)/tests/%: tests/unit/%.c $(LIBSTEPD) $(LIBAGENT) $(LIBSTEP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(shell pkg-config --cflags $(TEST_PKGS)) $(CFLAGS_ALL) \
	    -MMD -MP -o $@ $< $(LIBSTEPD) $(LIBAGENT) $(LIBSTEP) $(LDFLAGS_ALL) \
	    $(shell pkg-config --libs $(TEST_PKGS)) $(LDLIBS_ALL)

unit: $(UNIT_BIN)

# Integration scripts find the programs through BIN and the tree through TOP.
test: all $(UNIT_BIN)
	BIN=$(CURDIR)/$(B) TOP=$(CURDIR) prove $(PROVE_FLAGS) -f $(UNIT_BIN) $(SHELL_T)

SAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
check-san:
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	$(MAKE) test B=build-san CFLAGS='-O1 -g' SAN='$(SAN_FLAGS)'

# The server suite again with every stepd on PostgreSQL metadata (a throwaway cluster).
check-pg: all
	BIN=$(CURDIR)/$(B) TOP=$(CURDIR) sh tests/run-pg.sh $(PROVE_FLAGS)

# make check: dependencies, the fuzz smoke runs, the suite plainly (and its server part on
# PostgreSQL), then under ASan+UBSan.
check: deps
	$(MAKE) fuzz-smoke
	$(MAKE) test
	$(MAKE) check-pg
	$(MAKE) check-san

deps:
	@sh contrib/deps.sh

# libFuzzer targets: built with clang into build-fuzz.
FUZZ_CFLAGS = -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
$(B)/fuzz/%: tests/fuzz/%.c $(LIBSTEPD) $(LIBAGENT) $(LIBSTEP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -fsanitize=fuzzer -o $@ $< \
	    $(LIBSTEPD) $(LIBAGENT) $(LIBSTEP) $(LDFLAGS_ALL) $(LDLIBS_ALL)

fuzz-build: $(FUZZ_BIN)

FUZZ_RUNS ?= 20000
fuzz-smoke:
	$(MAKE) fuzz-build B=build-fuzz CC=clang CFLAGS='$(FUZZ_CFLAGS)'
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); c=tests/fuzz/corpus/$${n#fuzz_}; \
	    echo "fuzz: $$n ($(FUZZ_RUNS) runs)"; \
	    rm -rf build-fuzz/new-$$n && mkdir -p build-fuzz/new-$$n && \
	    build-fuzz/fuzz/$$n -runs=$(FUZZ_RUNS) -seed=1 -rss_limit_mb=1024 build-fuzz/new-$$n $$c \
	      >build-fuzz/$$n.log 2>&1 \
	      || { tail -40 build-fuzz/$$n.log; exit 1; }; done

FUZZ_TIME ?= 300
fuzz:
	$(MAKE) fuzz-build B=build-fuzz CC=clang CFLAGS='$(FUZZ_CFLAGS)'
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); c=tests/fuzz/corpus/$${n#fuzz_}; \
	    echo "fuzz: $$n for $(FUZZ_TIME)s"; \
	    build-fuzz/fuzz/$$n -max_total_time=$(FUZZ_TIME) -rss_limit_mb=1024 $$c || exit 1; done

bench: all
	BIN=$(CURDIR)/$(B) TOP=$(CURDIR) bash contrib/bench/bench.sh

demo: deps all
	BIN=$(CURDIR)/$(B) TOP=$(CURDIR) bash contrib/demo.sh

# Two stepd on a throwaway PostgreSQL behind HAProxy; one is killed mid-upload.
cluster-demo: deps all
	BIN=$(CURDIR)/$(B) TOP=$(CURDIR) bash contrib/cluster-demo.sh

C_FILES = $(wildcard common/*.[ch] db/*.[ch] config/*.[ch] server/*.[ch] agent/*.[ch] \
          tests/unit/*.[ch] tests/fuzz/*.[ch])
format:
	clang-format -i $(C_FILES)
format-check:
	clang-format --dry-run -Werror $(C_FILES)

# cppcheck reads GCC vector types (md5.c's lanes) as arrays of one element.
lint:
	@! grep -nE '\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|strtok)\(' $(C_FILES) || \
	    { echo "lint: banned function"; exit 1; }
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
	    --suppress=ctuArrayIndex:common/md5.c \
	    -Icommon -Idb -Iconfig -Iserver -Iagent common db config server agent

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin
	install -m 0755 $(B)/stepsync $(DESTDIR)$(PREFIX)/bin/stepsync
	install -m 0755 $(B)/stepd $(DESTDIR)$(PREFIX)/sbin/stepd
	@if [ -d contrib/man ]; then install -d $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(PREFIX)/share/man/man5 $(DESTDIR)$(PREFIX)/share/man/man8; \
	    for m in contrib/man/*.[158]; do [ -f "$$m" ] || continue; s=$${m##*.}; \
	    install -m 0644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done; fi

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(B) -name '*.d' 2>/dev/null)

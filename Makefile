# bridle — build, run, test. See README.md.
#
#   make            build/bridle and build/bridle-mock
#   make run        install what is missing, build, start PostgreSQL + mock + gateway
#   make stop       stop everything `make run` started
#   make test       unit + integration tests (then the ASan/UBSan pass)
#   make test-build the Makefile's own test (a first build on a fresh machine)
#   make test-asan  the suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      side-by-side benchmark, results into bench/RESULTS.md
#   make fuzz       short libFuzzer runs over every parser of untrusted input
#   make format     clang-format everything

BUILD ?= build
CC ?= cc
PKGS = libevent libcurl json-c msgpack libpq openssl
# Installs what is missing (Debian packages, the integration suite's npm
# packages); fast and silent when everything is there.
DEPS_CMD ?= scripts/install-deps.sh
RUN_CMD ?= scripts/run.sh
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_FOUND := $(.SHELLSTATUS)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -levent_openssl

# On a machine without the -dev packages (a fresh Debian 12) pkg-config has
# no flags to give while this file is read, before any rule could install
# them: every compile would miss -I/usr/include/postgresql. So a build goal
# then first installs them through an included file that make must remake
# before anything else (a FORCE rule running DEPS_CMD), and make reads this
# Makefile again, with pkg-config's answers. Goals that compile nothing
# skip it; a second failure after the install stops with the reason.
NO_FLAGS_GOALS = clean format stop deps test-build
ifneq ($(PKG_FOUND),0)
ifneq ($(filter-out $(NO_FLAGS_GOALS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(MAKE_RESTARTS),)
$(error pkg-config still finds no flags for "$(PKGS)" after $(DEPS_CMD): install their -dev packages (scripts/install-deps.sh lists them))
endif
$(info pkg-config cannot find "$(PKGS)": installing what is missing first ($(DEPS_CMD)))
include $(BUILD)/.deps-installed
$(BUILD)/.deps-installed: FORCE
	@$(DEPS_CMD)
	@mkdir -p $(dir $@) && touch $@
endif
endif
OPT ?= -O2 -g
CFLAGS_BASE = -std=gnu11 $(OPT) -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -D_GNU_SOURCE -I. $(PKG_CFLAGS)
ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif
CFLAGS += $(CFLAGS_BASE)
LDLIBS = $(PKG_LIBS) -lm

CORE_SRC := $(wildcard lib/*.c router/*.c providers/*.c db/*.c server/*.c) $(filter-out cli/main.c,$(wildcard cli/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
# migrations/*.sql embedded in the binary (db/migrate.c reads them): one C file,
# every file's text as a string, in file-name order. MIGRATIONS is never empty.
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
CORE_OBJ += $(BUILD)/gen/migrations.o
MOCK_SRC := $(wildcard tests/mock/*.c)
MOCK_OBJ := $(MOCK_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/*/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run stop test test-unit test-integration test-spool test-asan test-build bench fuzz format clean deps FORCE
all: $(BUILD)/bridle $(BUILD)/bridle-mock

FORCE:

$(BUILD)/obj/%.o: %.c $(wildcard */*.h tests/*/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# Byte-exact (od, no escaping): each file becomes a char array, then the table.
$(BUILD)/gen/migrations.o: $(MIGRATIONS) db/migrate.h Makefile
	@mkdir -p $(dir $@)
	@{ echo '/* generated from the files in migrations/ by the Makefile; do not edit */'; \
	   echo '#include "db/migrate.h"'; i=0; \
	   for f in $(MIGRATIONS); do i=$$((i+1)); echo "static const char m$$i[] = {"; \
	     od -An -v -tx1 $$f | sed 's/[0-9a-f][0-9a-f]/0x&,/g'; echo '0};'; done; \
	   echo 'const migrate_file migrate_files[] = {'; i=0; \
	   for f in $(MIGRATIONS); do i=$$((i+1)); echo "{\"$$(basename $$f .sql)\", m$$i},"; done; \
	   echo '};'; echo "const int migrate_n_files = $$i;"; } >$(BUILD)/gen/migrations.c
	$(CC) $(CFLAGS) -c $(BUILD)/gen/migrations.c -o $@

$(BUILD)/libbridle.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/bridle: $(BUILD)/obj/cli/main.o $(BUILD)/libbridle.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bridle-mock: $(MOCK_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libbridle.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libbridle.a $(LDFLAGS) $(LDLIBS) -lcmocka

deps:
	@$(DEPS_CMD)

# One after the other, even with -j2: the build must not start while the
# packages it compiles against are still being installed.
run: deps
	@$(MAKE) --no-print-directory all
	@$(RUN_CMD) start

stop:
	@$(RUN_CMD) stop

test-unit: $(UNIT_BIN)
	@scripts/run-unit-tests.sh $(UNIT_BIN)

test-integration: all
	@BUILD=$(BUILD) scripts/run-integration-tests.sh

# The spool's crash consistency: 1,000 SIGKILLed writers, 10,000 damaged files.
test-spool:
	@SPOOL_BUILD=$(BUILD)/spool-crash tests/db/spool_crash.sh

# The default suite: unit and integration tests, then the same under ASan+UBSan.
# Builds in parallel (make -j2 test), then runs the suites one after the other
# so their output does not interleave.
test: deps
	@TEST_PKGS=1 $(DEPS_CMD)
	@scripts/check-layers.sh
	@$(MAKE) --no-print-directory test-build
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory test-integration
	@$(MAKE) --no-print-directory test-spool
	@$(MAKE) --no-print-directory test-asan

ASAN_MAKE = $(MAKE) --no-print-directory BUILD=build-asan SAN=1 OPT="-O1 -g"
test-asan:
	@$(ASAN_MAKE) all $(UNIT_BIN:$(BUILD)/%=build-asan/%)
	@$(ASAN_MAKE) test-unit
	@$(ASAN_MAKE) test-integration

# The Makefile itself: a first build on a machine without the -dev packages
# (a fake pkg-config that finds nothing until a fake install ran). Seconds.
test-build:
	@tests/build/make_fresh.sh

bench: all
	@bench/run.sh

fuzz:
	@scripts/fuzz.sh

# CI (.ci/run): every target in tests/fuzz/ for 20 s; fails on a crash or a target that does not build.
.PHONY: fuzz-ci
fuzz-ci:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-20} scripts/fuzz.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan

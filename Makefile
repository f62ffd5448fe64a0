# bridle — build, run, test. See README.md.
#
#   make            build/bridle and build/bridle-mock
#   make run        install what is missing, build, start PostgreSQL + mock + gateway
#   make stop       stop everything `make run` started
#   make test       unit + integration tests (then the ASan/UBSan pass)
#   make test-asan  the suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      side-by-side benchmark, results into bench/RESULTS.md
#   make fuzz       short libFuzzer runs over every parser of untrusted input
#   make format     clang-format everything

BUILD ?= build
CC ?= cc
PKGS = libevent libcurl json-c msgpack libpq openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -levent_openssl
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

.PHONY: all run stop test test-unit test-integration test-spool test-asan bench fuzz format clean deps
all: $(BUILD)/bridle $(BUILD)/bridle-mock

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
	@scripts/install-deps.sh

run: deps all
	@scripts/run.sh start

stop:
	@scripts/run.sh stop

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

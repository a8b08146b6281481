# Front door over the CMake presets. Every target that needs the build bootstraps the Debian
# packages first, so `make test` alone goes from a fresh clone to passing tests.
#   make test                 build the release preset and run every test
#   make bench                measure every executor, check each point against its model, plot,
#                             report (results/latest/index.html), budgeted to ten minutes on 2
#                             cores; make bench QUICK=1: a smaller sweep, budgeted to two
#   make lessons              build every lesson program
#   make lesson N=1 ARGS="--workers 4"   run one lesson; exits with the program's own status
#   make test PRESET=tsan     the same under ThreadSanitizer (also: debug, asan)
PRESET ?= release
BUILD := build/$(PRESET)

.PHONY: all bootstrap configure build test bench lessons lesson tidy format snippets clean
all: build

bootstrap:
	@scripts/bootstrap

configure: bootstrap
	@test -f $(BUILD)/CMakeCache.txt || cmake --preset $(PRESET)

build: configure
	cmake --build --preset $(PRESET)

test: build
	ctest --preset $(PRESET) -j $$(nproc)

lessons: configure
	cmake --build --preset $(PRESET) --target lessons

# make reports any failed recipe as its own exit status 2; the line below names the program's own
# status (0, 1 or 2). scripts/lesson passes it through exactly.
lesson:
	@test -n "$(N)" || { echo "make lesson: N is required, e.g. make lesson N=1 ARGS=\"--workers 4\" (see lessons/README.md)" >&2; exit 2; }
	@CLAB_PRESET=$(PRESET) scripts/lesson $(N) $(ARGS) || { rc=$$?; echo "make lesson: the program exited with status $$rc" >&2; exit $$rc; }

bench:
	@scripts/bootstrap --bench
	@test -f build/release/CMakeCache.txt || cmake --preset release
	cmake --build --preset release
	@QUICK=$(QUICK) scripts/bench

snippets:
	@scripts/snippets --write

tidy: configure
	run-clang-tidy -p $(BUILD) -quiet 'workloads|models|lessons|benchmarks'

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf build

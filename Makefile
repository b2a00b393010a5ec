# Thin front door over CMake + Ninja.  See README.md.
BUILD  ?= build
ASAN   ?= build-asan
JOBS   ?= $(shell nproc)
CMAKE_FLAGS ?=
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all deps check check-asan demo bench clean fuzz install deb

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

deps:
	./scripts/deps.sh

# make check: install what is missing, build, run every test (normal build,
# then the whole suite again under ASan+UBSan).
check: deps
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)
	ninja -C $(BUILD)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600
	$(MAKE) check-asan

check-asan:
	cmake -S . -B $(ASAN) -G Ninja -DCMAKE_C_COMPILER=clang -DFERRY_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	ninja -C $(ASAN)
	cd $(ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  FERRY_SANITIZED=1 ctest --output-on-failure -j $(JOBS) --timeout 900

demo: deps all
	./scripts/demo.sh $(BUILD)

bench: all
	./bench/run.sh $(BUILD)

fuzz:
	cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DFERRY_FUZZ=ON -DFERRY_SANITIZE=ON
	ninja -C build-fuzz

# make install PREFIX=/usr DESTDIR=DIR: binaries, man pages, systemd units,
# bash completion, example configuration (see cmake/install.cmake).
install: all
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

# make deb: the Debian package (debhelper), in $(BUILD)/deb/ (scripts/deb.sh).
deb:
	./scripts/deb.sh $(BUILD)/deb

clean:
	rm -rf $(BUILD) $(ASAN) build-fuzz

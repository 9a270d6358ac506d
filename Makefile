# Shortcuts for the scripts in scripts/ (see README).
.PHONY: bench dev test

bench:
	./scripts/bench

dev:
	./scripts/dev

test:
	./scripts/test

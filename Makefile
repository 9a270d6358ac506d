# Shortcuts for the scripts in scripts/ (see README).
.PHONY: bench chaos dev test

bench:
	./scripts/bench

chaos:
	./scripts/chaos

dev:
	./scripts/dev

test:
	./scripts/test

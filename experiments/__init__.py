"""Studies of the method: the 3-seed study and the generator experiments (quality, privacy, utility), each writing
its results under docs/results/. Timings live in benchmarks/."""

"""The ``clustrix-futures`` command and what it is made of: looking after runs (status, logs, cancel, clean),
checking a profile (doctor), the free-resources board (nodes) and local-versus-cluster benchmarks (bench)."""

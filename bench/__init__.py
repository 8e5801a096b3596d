"""
Benchmarks of L{txreconnect.ReconnectingConnectionPool} side by side with
Twisted's own C{adbapi.ConnectionPool}, measured in the same process and
the same run, against throwaway servers that the benchmark starts and
destroys itself.

Run them from the repository root::

    .venv/bin/python -m bench            # everything, about 10 minutes
    .venv/bin/python -m bench --smoke    # every section with tiny counts
    .venv/bin/python -m bench --only overhead|resolve_cost|recovery|resources

Modules, one job each:

  - L{bench.run}: the command line; starts the servers, runs the sections,
    writes the results.
  - L{bench._common}: what the sections share: settings, servers, pool
    contenders, statistics, the report a section fills.
  - L{bench._render}: the results files' text: markdown tables, cell
    formats, JSON numbers.
  - L{bench.workloads}: the calls the steady-state sections make, and
    their table.
  - L{bench.overhead}: measures steady-state throughput ratios, the
    pool's own cost per interaction and where it goes.
  - L{bench.rounds}: pools taking turns in short windows: the same-run
    throughput ratios of the steady-state sections.
  - L{bench.instructions}: counts instructions per call under callgrind.
  - L{bench.round_trips}: counts the requests sent per call under strace.
  - L{bench.resolve_cost}: measures what C{cp_resolve_commits=True} costs
    when nothing fails (throughput ratios, round trips, instructions).
  - L{bench.resolve_cost_tables}: renders its tables from its numbers
    alone (also from C{bench/results/resolve_cost.json}).
  - L{bench.overhead_tables}: renders the steady-state tables from their
    numbers alone (also from a results file: C{python -m
    bench.overhead_tables bench/results/overhead.json}).
  - L{bench.recovery}: what callers see across restarts, killed sessions,
    idle timeouts and dropped connections.
  - L{bench.resources}: memory, descriptors, threads and server sessions
    across many interactions and fault cycles.
  - L{bench.plot}: the pictures.
  - L{bench._cpus}: runs a measurement on one CPU.
"""

"""
The parts of the C{txreconnect drill} command (L{txreconnect.drill}), one
job each: the SQL it runs (L{sql}), where it runs it and how faults are
made there (L{site}, L{sqlite}, L{server}), the clients' workload and what
they saw (L{workload}, L{record}), the fault schedule (L{faults}), the
audit of the stored rows (L{audit}), the report table (L{report}), and
the terminal and the log (L{output}).
"""

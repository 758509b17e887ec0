"""Fault injection: the daemon run as a real process against a PostgreSQL and a Redis the tests
own, killed, cut off and restarted while a writer keeps changing rows (issue 5)."""

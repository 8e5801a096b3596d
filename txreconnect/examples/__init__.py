"""
Runnable examples of txreconnect in a service.

  - L{txreconnect.examples.webservice}: a C{twisted.web} service that
    answers each request from the database through a
    L{ReconnectingConnectionPool<txreconnect.ReconnectingConnectionPool>}
    and keeps serving through a database restart
    (C{twistd -n txreconnect-example-web --db-port 5432 ...}).
"""

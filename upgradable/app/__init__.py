"""
The ``twistd upgradable`` and ``twistd upgradable-tunnel`` applications:
command-line options, services, worker processes, the health check and the
built-in page. This is not library API: a program that serves upgrades
itself needs only :mod:`upgradable` (and :mod:`upgradable.client` to make
them), none of whose modules imports this subpackage. Its public modules
are :mod:`upgradable.app.tap` and :mod:`upgradable.app.tunnel`, whose
``Options`` and ``makeService`` the twistd plugins load.
"""

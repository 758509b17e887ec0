"""The Store: the only code that runs SQL on the connector's own schema (connector/store/
base.py has the contract, postgres.py the PostgreSQL implementation, install.py and
dead_letters.py the admin commands)."""

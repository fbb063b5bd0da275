"""System of record: SQLModel tables, the engine and sessions, LanceDB tables, migrations, deployments, the run log. No domain rules."""

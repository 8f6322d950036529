"""Storage: the database engine, schema and queue; the only user of SQLAlchemy."""

"""The store schema version this code reads and writes (schema.py holds the tables and the migrations to it).

Apart from schema.py so that opening a store at this version never imports SQLAlchemy on the SQLite path."""

# 1: the stores made before the version was recorded; 2: + controllers.machine and schema_version
SCHEMA_VERSION = 2

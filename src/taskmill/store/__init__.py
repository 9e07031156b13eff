"""The only SQL in taskmill: schema, migrations, and one module per table it writes."""

"""The remediator's state database: schema, the writer on its own thread, records, queries."""

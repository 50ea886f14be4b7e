-- A task's documents (task.json, artifacts, records) when they are kept in the database
-- instead of under DATA_DIR: one row per document, named as the file would be.
CREATE TABLE documents (
    task_id TEXT NOT NULL,
    name TEXT NOT NULL,
    body JSONB NOT NULL,
    written_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, name)
);

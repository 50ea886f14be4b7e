-- Messages a state change leads to, kept with it until they went out.
CREATE TABLE outbox (
    task_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    topic TEXT NOT NULL,
    message_key TEXT NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (task_id, step_id, attempt, seq)
);

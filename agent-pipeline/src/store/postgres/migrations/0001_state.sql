-- Tasks, their steps' attempts, and the positions of consumer groups.
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    status TEXT NOT NULL,
    current_step TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX tasks_by_created_at ON tasks (created_at);

CREATE TABLE attempts (
    task_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    stage_order BIGINT NOT NULL,
    status TEXT NOT NULL,
    request JSONB NOT NULL,
    error TEXT,
    model TEXT,
    requested_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT,
    PRIMARY KEY (task_id, step_id, attempt)
);
CREATE INDEX attempts_unfinished ON attempts (requested_at) WHERE status = 'requested';

CREATE TABLE consumer_offsets (
    group_name TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_name, topic, partition_id)
);

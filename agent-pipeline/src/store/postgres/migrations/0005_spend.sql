-- What LLM calls spent: each attempt's calls (a JSON array; NULL while it is requested and
-- in rows written before), and each task's sum over its recorded attempts. The defaults make
-- older rows read as having spent nothing.
ALTER TABLE attempts ADD COLUMN calls JSONB;
ALTER TABLE tasks
    ADD COLUMN prompt_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN completion_tokens BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN llm_calls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unpriced_calls BIGINT NOT NULL DEFAULT 0;

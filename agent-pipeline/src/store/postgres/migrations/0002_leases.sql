-- Time-bounded claims on resources (bus partitions), with a fencing epoch.
CREATE TABLE leases (
    resource TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

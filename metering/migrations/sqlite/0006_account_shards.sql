-- The balance of a hot account (the platform's, which every settle moves)
-- spread over rows, so that settles running at once lock different rows
-- instead of queueing on one: an account's balance is its own row's plus
-- the sum of its shards.
CREATE TABLE account_shards (
    account TEXT NOT NULL REFERENCES accounts (id),
    shard INTEGER NOT NULL,
    balance BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, shard)
);

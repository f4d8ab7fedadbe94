-- Scores every test request of the finetune crate's protocol in DuckDB and computes HR@1 and
-- HR@3 in SQL. Start DuckDB unsigned from the repository root, with the paths set:
--   duckdb -unsigned -c "SET VARIABLE model = 'models/default.gguf';
--                        SET VARIABLE requests = 'data/ml1m/test.jsonl';
--                        .read examples/duckdb_hr.sql"
-- (test.jsonl comes from `kvrec-finetune data`; each line has user, history, candidates and
-- the positive id).
LOAD 'target/release/kvrec.duckdb_extension';
SELECT kvrec_load_model('eval', getvariable('model'));

CREATE OR REPLACE TEMP TABLE ranked AS
SELECT user_id, positive,
       recommend('eval', "user", history, candidates) AS ids  -- STRUCT and LIST values as read
FROM read_json(getvariable('requests'), format = 'newline_delimited');

SELECT count(*)                                              AS requests,
       avg(CASE WHEN ids[1] = positive THEN 1 ELSE 0 END)    AS hr_at_1,
       avg(CASE WHEN list_position(ids, positive) <= 3 THEN 1 ELSE 0 END) AS hr_at_3
FROM ranked;

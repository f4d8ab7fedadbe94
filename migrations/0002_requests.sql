-- Requests as `kvrec-finetune data --sqlite` writes them: one self-contained row per request
-- (JSON user key-values, history oldest first, candidates with their keys), ready for
-- recommend(user, history, candidates) and for `kvrec-finetune eval --sqlite`.
CREATE TABLE IF NOT EXISTS requests (
  user_id    INTEGER NOT NULL,
  split      TEXT NOT NULL CHECK (split IN ('train', 'test')),
  user       TEXT NOT NULL,
  history    TEXT NOT NULL,
  candidates TEXT NOT NULL,
  positive   INTEGER NOT NULL      -- the movie the user actually watched next
);
CREATE INDEX IF NOT EXISTS requests_by_split ON requests(split, user_id);

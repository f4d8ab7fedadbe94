-- MovieLens-shaped tables, as kvrec's importer writes them and the sql/ examples read them.
-- Values are text labels, not codes ("25-34", "programmer"): the template renders them as given.

CREATE TABLE IF NOT EXISTS users (
  user_id    INTEGER PRIMARY KEY,
  gender     TEXT,               -- 'male' / 'female'
  age        TEXT,               -- range label, e.g. '25-34'
  occupation TEXT,               -- label, e.g. 'programmer'
  zip_code   TEXT                -- kept for completeness; the paper does not render it
);

CREATE TABLE IF NOT EXISTS movies (
  movie_id INTEGER PRIMARY KEY,
  title    TEXT NOT NULL,        -- with the year, e.g. 'Toy Story (1995)'
  genres   TEXT NOT NULL,        -- pipe-separated, e.g. 'Animation|Children''s|Comedy'
  year     INTEGER               -- parsed from the title; NULL when it has none
);

CREATE TABLE IF NOT EXISTS ratings (
  user_id  INTEGER NOT NULL REFERENCES users(user_id),
  movie_id INTEGER NOT NULL REFERENCES movies(movie_id),
  rating   INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
  ts       INTEGER NOT NULL,     -- seconds since the epoch
  PRIMARY KEY (user_id, movie_id)
) WITHOUT ROWID;

-- A user's history in time order, and "who watched this movie".
CREATE INDEX IF NOT EXISTS ratings_by_user_time ON ratings(user_id, ts);
CREATE INDEX IF NOT EXISTS ratings_by_movie ON ratings(movie_id);

-- temp.kvrec_requests: one leave-one-out request per user in :first_user..:last_user, built
-- from the migrations/ tables with SQLite's JSON functions (works on SQLite 3.40).
-- The user's latest rating is the positive; the history is the 20 ratings before it, oldest
-- first; the candidates are the positive plus 9 movies the user never rated, in a pseudo-random
-- order fixed per user. Ties in time are broken by movie_id. Window functions fix the order of the JSON
-- arrays: before SQLite 3.44 an aggregate cannot take its own ORDER BY.
--   sqlite3 ml.db '.load target/release/libkvrec' \
--     '.parameter set :first_user 1' '.parameter set :last_user 10' '.read sql/requests.sql'
DROP TABLE IF EXISTS temp.kvrec_requests;
CREATE TEMP TABLE kvrec_requests AS
WITH
ranked AS (
  SELECT user_id, movie_id, rating,
         row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, movie_id DESC) AS recency
  FROM ratings
  WHERE user_id BETWEEN :first_user AND :last_user
),
histories AS (
  SELECT user_id, history FROM (
    SELECT r.user_id, r.recency,
           json_group_array(json_object('id', m.movie_id, 'title', m.title, 'rating', r.rating, 'genres', m.genres))
             OVER (PARTITION BY r.user_id ORDER BY r.recency DESC
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS history
    FROM ranked r JOIN movies m USING (movie_id)
    WHERE r.recency BETWEEN 2 AND 21)
  WHERE recency = 2
),
negatives AS (
  SELECT user_id, movie_id FROM (
    SELECT u.user_id, m.movie_id,
           row_number() OVER (PARTITION BY u.user_id
                              ORDER BY ((m.movie_id + u.user_id * 7919) * (m.movie_id + u.user_id * 7919) + u.user_id) % 65521, m.movie_id) AS k
    FROM users u, movies m
    WHERE u.user_id BETWEEN :first_user AND :last_user
      AND NOT EXISTS (SELECT 1 FROM ratings x WHERE x.user_id = u.user_id AND x.movie_id = m.movie_id))
  WHERE k <= 9
),
candidate_lists AS (
  SELECT user_id, candidates FROM (
    SELECT c.user_id,
           json_group_array(json_object('id', m.movie_id, 'title', m.title))
             OVER (PARTITION BY c.user_id ORDER BY ((c.movie_id + c.user_id) * (c.movie_id + c.user_id) * 40503) % 65521, c.movie_id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS candidates,
           row_number() OVER (PARTITION BY c.user_id ORDER BY c.movie_id) AS k
    FROM (SELECT user_id, movie_id FROM ranked WHERE recency = 1
          UNION ALL SELECT user_id, movie_id FROM negatives) c
    JOIN movies m USING (movie_id))
  WHERE k = 1
)
SELECT u.user_id,
       json_object('gender', u.gender, 'age', u.age, 'occupation', u.occupation) AS user,
       coalesce(h.history, '[]') AS history,
       cl.candidates,
       r.movie_id AS positive
FROM users u
JOIN ranked r ON r.user_id = u.user_id AND r.recency = 1
JOIN candidate_lists cl ON cl.user_id = u.user_id
LEFT JOIN histories h ON h.user_id = u.user_id
ORDER BY u.user_id;

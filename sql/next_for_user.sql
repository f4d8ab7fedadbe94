-- What should :user_id watch next? The best :k movies of the whole catalog of the model loaded
-- as 'default' (recommend_topk ranks every item it knows in one prompt pass), after the user's
-- ratings in time order (the model reads the last 20; every rated movie is left out of the
-- answer), with their titles. Needs a model with a catalog, e.g. models/kvrec-default.gguf:
--   SELECT kvrec_load_model('default', 'models/kvrec-default.gguf');
WITH history AS (
  SELECT json_group_array(json_object('id', movie_id)) AS items
  FROM (SELECT movie_id FROM ratings WHERE user_id = :user_id ORDER BY ts, movie_id)
)
SELECT ranked.key + 1 AS rank, movies.movie_id, movies.title
FROM history, json_each(recommend_topk('{}', history.items, :k)) AS ranked
JOIN movies ON movies.movie_id = ranked.value
ORDER BY ranked.key;

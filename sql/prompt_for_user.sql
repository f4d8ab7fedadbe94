-- The InstructMK prompt and the expected answer for each request built by sql/requests.sql.
--   sqlite3 ml.db '.load target/release/libkvrec' '.parameter set :first_user 1' \
--     '.parameter set :last_user 1' '.read sql/requests.sql' '.read sql/prompt_for_user.sql'
SELECT user_id,
       kvrec_prompt(user, history, candidates) AS prompt,
       kvrec_target(candidates, positive) AS answer
FROM temp.kvrec_requests
ORDER BY user_id;

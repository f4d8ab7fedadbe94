-- Training rows: each request from sql/requests.sql plus 4 copies whose answers have their
-- negatives shuffled (InstructMK-SO, the paper's best variant), seeded by user id.
--   sqlite3 ml.db '.load target/release/libkvrec' '.parameter set :first_user 1' \
--     '.parameter set :last_user 3' '.read sql/requests.sql' '.read sql/training_data.sql'
SELECT r.user_id, a.copy, a.augmentation, a.prompt, a.answer
FROM temp.kvrec_requests r,
     kvrec_augmentations(r.user, r.history, r.candidates, 'SO', r.user_id, 4,
                         json_object('positive', r.positive)) a
ORDER BY r.user_id, a.copy;

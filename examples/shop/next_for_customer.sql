-- The k SKUs the shop's model ranks highest for a customer, from their last 20 orders.
-- Parameters: :customer (a customer_id), :k.
WITH recent AS (
  SELECT sku, ordered_at FROM orders WHERE customer_id = :customer
   ORDER BY ordered_at DESC LIMIT 20
), history AS (
  SELECT json_group_array(json_object('id', sku)) AS items,
         group_concat(sku, ' ') AS skus
    FROM (SELECT sku FROM recent ORDER BY ordered_at)
)
SELECT history.skus, r.id, p.name, r.score
  FROM history, recommend_topk_each('shop', '{}', history.items, :k) r
  JOIN products p ON p.sku = r.id
 ORDER BY r.rank;

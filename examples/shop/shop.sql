-- A small shop that is not about movies: text SKUs, text customer ids, ISO timestamps and
-- its own column names. Deterministic, so the example and its test always see the same data.
-- Customers tend to buy along a product line (SKU n, then SKU n+1 of the same range) with
-- some jumps elsewhere, a pattern a sequential model can learn and co-occurrence partly can.
CREATE TABLE products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL);
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, segment TEXT NOT NULL);
CREATE TABLE orders (
  order_id INTEGER PRIMARY KEY,
  customer_id TEXT NOT NULL REFERENCES customers,
  sku TEXT NOT NULL REFERENCES products,
  ordered_at TEXT NOT NULL  -- ISO-8601, UTC
);

WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 59)
INSERT INTO products
SELECT printf('SKU-%04d', 1000 + i * 7),
       printf('%s no. %d', CASE i / 10 WHEN 0 THEN 'Mug' WHEN 1 THEN 'Teapot' WHEN 2 THEN 'Kettle'
                                      WHEN 3 THEN 'Grinder' WHEN 4 THEN 'Scale' ELSE 'Filter' END,
              i % 10 + 1),
       CASE i / 10 WHEN 0 THEN 'mugs' WHEN 1 THEN 'tea' WHEN 2 THEN 'kettles'
                   WHEN 3 THEN 'grinders' WHEN 4 THEN 'scales' ELSE 'filters' END
  FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO customers
SELECT printf('C%05d', i * 13), CASE i % 3 WHEN 0 THEN 'retail' WHEN 1 THEN 'cafe' ELSE 'office' END
  FROM n;

-- Each customer buys 12 times, three days apart; `h` is a linear congruential generator.
WITH RECURSIVE steps(c, t, p, h) AS (
  SELECT rowid, 0, (rowid * 7919) % 60, (rowid * 2654435761) % 2147483648 FROM customers
  UNION ALL
  SELECT c, t + 1,
         CASE WHEN h % 10 < 7 THEN (p / 10) * 10 + (p % 10 + 1) % 10 ELSE (h / 16) % 60 END,
         (h * 1103515245 + 12345) % 2147483648
    FROM steps WHERE t < 11
)
INSERT INTO orders (customer_id, sku, ordered_at)
SELECT (SELECT customer_id FROM customers WHERE rowid = c),
       printf('SKU-%04d', 1000 + p * 7),
       strftime('%Y-%m-%d %H:%M:%S', '2024-01-01', printf('+%d days', t * 3),
                printf('+%d minutes', c * 17))
  FROM steps ORDER BY c, t;

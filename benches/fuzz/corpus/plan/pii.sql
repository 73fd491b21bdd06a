CREATE PRODUCT contacts WITH (sensitive = 'email') AS
SELECT id, kiln_pii_hash(customer, key => 'k') AS customer_hash, concat(customer, '@example.com') AS email FROM orders;

CREATE PRODUCT v AS SELECT id FROM orders WHERE customer = $region AND amount > $min_total AND at >= $start_date;

-- The tutorial's example table: one row per visit of /transaction.
CREATE TABLE example_table (
    count serial PRIMARY KEY,
    name text NOT NULL
);

-- The rollup histograms again as two arrays beside the HDR blob, so SQL can
-- merge them over any grouping and read percentiles with the functions of
-- 0012 (the Grafana dashboards do; see dashboards/README.md):
--   hist_idx  the non-empty bucket indexes of `hist`, ascending
--   hist_cnt  their counts, same length
-- tally writes them with every row it writes `hist` to; rows written before
-- this migration have NULLs here until their window is written again.
-- On the partitioned parents, so every partition, old and new, has them.
ALTER TABLE rollup_windows ADD COLUMN hist_idx SMALLINT[], ADD COLUMN hist_cnt BIGINT[];
ALTER TABLE rollup_hours ADD COLUMN hist_idx SMALLINT[], ADD COLUMN hist_cnt BIGINT[];
ALTER TABLE rollup_days ADD COLUMN hist_idx SMALLINT[], ADD COLUMN hist_cnt BIGINT[];

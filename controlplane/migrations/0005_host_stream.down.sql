ALTER TABLE host DROP COLUMN stream_id;

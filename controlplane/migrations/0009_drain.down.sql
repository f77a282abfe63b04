DROP TABLE operation;
DROP SEQUENCE operation_number;
ALTER TABLE host DROP COLUMN drained;
ALTER TABLE instance DROP COLUMN replaces;

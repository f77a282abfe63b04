DROP SEQUENCE instance_number;

DROP TABLE leader;
DROP TABLE event;
DROP TABLE instance;
DROP TABLE workload;
DROP TABLE host;

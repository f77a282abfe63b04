DELETE FROM token WHERE role = 'webhook';
ALTER TABLE token DROP CONSTRAINT token_role_check;
ALTER TABLE token ADD CONSTRAINT token_role_check
    CHECK (role IN ('viewer', 'operator', 'admin', 'join', 'host'));
DROP TABLE deploy_freeze;

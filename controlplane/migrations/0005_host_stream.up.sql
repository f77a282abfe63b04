-- Which stream last registered the host: a stream that ends marks the host disconnected only
-- if it is still that stream, so a stream ending late (on this replica or another) never
-- undoes the registration of the stream that replaced it.
ALTER TABLE host ADD COLUMN stream_id text NOT NULL DEFAULT '';

-- The origin sender's id on its network (an id only, never a name or text): an edit, a deletion
-- or a reaction's removal is applied as the author's own only when it comes from the same account
-- and this same id. NULL for events stored before version 6: their author is unknown, so an edit
-- of one is refused and a deletion counts as moderation.
ALTER TABLE events ADD COLUMN sender_id TEXT;

-- How each tracking number is printed for visitors (`+7 495 123-45-67`), written when the
-- number is created or changed. Formatted on the page load instead, by the numbering plan's
-- rules, it was a seventh of the server's work for a visitor shown a number for the first
-- time; numbers written before this migration get theirs when calltrail next starts
-- (`Store::migrate`).
ALTER TABLE tracking_numbers ADD COLUMN display TEXT;

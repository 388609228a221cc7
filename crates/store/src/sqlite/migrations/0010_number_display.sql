-- How each tracking number is printed for visitors (`+7 495 123-45-67`), written when the
-- number is created or changed. Formatting by the numbering plan's rules cost a fifth of a
-- new visitor's answer when it was done on the page load; numbers written before this
-- migration get theirs when calltrail next starts (`Store::migrate`).
ALTER TABLE tracking_numbers ADD COLUMN display TEXT;

-- The read side's database; the image creates analytics_write itself.
create database analytics_read;

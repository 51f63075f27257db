#!lua
-- A script that may write (Redis 7 script flags: none) but writes nothing:
-- Redis refuses it exactly when it would refuse a write (out of memory), and
-- it touches no key (nothing to allow in an ACL). Returns 1.
return 1

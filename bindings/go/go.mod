module rkv

go 1.19

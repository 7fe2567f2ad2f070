module consumer

go 1.19

require rkv v0.0.0

replace rkv => ../..

module github.com/smartybridge/smartybridge

go 1.26.8

require github.com/kelseyhightower/envconfig v1.4.0

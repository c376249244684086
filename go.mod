module github.com/thinback/thinback

go 1.24

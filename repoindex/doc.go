// Package repoindex reads the indexes of Linux package repositories (pacman
// sync databases, apt Release and Packages files, RPM repositories'
// repomd.xml and primary metadata) to learn the size and SHA-256 of every
// package file they list. Its input comes from mirrors and is treated as
// hostile: everything it reads is bounded by Limits.
package repoindex
